CREATE TABLE `user_quotas` (
	`user_id` text PRIMARY KEY NOT NULL,
	`daily_tokens` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
