CREATE TABLE `adapter_versions` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`user_id` text NOT NULL,
	`version` integer NOT NULL,
	`config` text NOT NULL,
	`file_path` text NOT NULL,
	`sha256` text NOT NULL,
	`metrics` text NOT NULL,
	`status` text NOT NULL,
	`active` integer DEFAULT 0 NOT NULL,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade,
	CONSTRAINT "adapter_versions_active_check" CHECK("adapter_versions"."active" in (0, 1))
);
--> statement-breakpoint
CREATE UNIQUE INDEX `adapter_versions_user_id_version_unique` ON `adapter_versions` (`user_id`,`version`);--> statement-breakpoint
CREATE UNIQUE INDEX `adapter_versions_one_active_per_user` ON `adapter_versions` (`user_id`) WHERE active = 1;--> statement-breakpoint
CREATE TABLE `history_items` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`user_id` text NOT NULL,
	`kind` text NOT NULL,
	`role` text,
	`text` text NOT NULL,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade,
	CONSTRAINT "history_items_kind_check" CHECK("history_items"."kind" in ('profile', 'dialogue', 'post', 'qa')),
	CONSTRAINT "history_items_role_check" CHECK("history_items"."role" is null or "history_items"."role" in ('user', 'assistant', 'system', 'other'))
);
--> statement-breakpoint
CREATE INDEX `history_items_user_id_id_idx` ON `history_items` (`user_id`,`id`);--> statement-breakpoint
CREATE TABLE `injection_jobs` (
	`id` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`state` text NOT NULL,
	`params` text NOT NULL,
	`progress` text,
	`result` text,
	`error` text,
	`created_at` integer NOT NULL,
	`started_at` integer,
	`finished_at` integer,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade,
	CONSTRAINT "injection_jobs_state_check" CHECK("injection_jobs"."state" in ('queued', 'running', 'succeeded', 'rejected', 'failed', 'cancelled'))
);
--> statement-breakpoint
CREATE INDEX `injection_jobs_user_id_created_at_idx` ON `injection_jobs` (`user_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `injection_jobs_state_created_at_idx` ON `injection_jobs` (`state`,`created_at`);--> statement-breakpoint
CREATE UNIQUE INDEX `injection_jobs_one_active_per_user` ON `injection_jobs` (`user_id`) WHERE state in ('queued', 'running');--> statement-breakpoint
CREATE TABLE `trials` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`job_id` text NOT NULL,
	`user_id` text NOT NULL,
	`idx` integer NOT NULL,
	`config` text NOT NULL,
	`objectives` text,
	`cost` text,
	`status` text NOT NULL,
	`adapter_path` text,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`job_id`) REFERENCES `injection_jobs`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `trials_job_id_idx_unique` ON `trials` (`job_id`,`idx`);--> statement-breakpoint
CREATE INDEX `trials_user_id_idx` ON `trials` (`user_id`,`id`);--> statement-breakpoint
CREATE TABLE `users` (
	`id` text PRIMARY KEY NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`metadata` text
);
