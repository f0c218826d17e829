CREATE TABLE `stored_responses` (
	`id` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`created_at` integer NOT NULL,
	`previous_response_id` text,
	`response` text NOT NULL,
	`items` text NOT NULL,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `stored_responses_created_at_idx` ON `stored_responses` (`created_at`);--> statement-breakpoint
CREATE INDEX `stored_responses_user_id_idx` ON `stored_responses` (`user_id`);