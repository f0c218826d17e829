-- Full-text index over history_items.text for bm25 search (drizzle-kit has no virtual tables, so this
-- is a custom migration). External-content FTS5: the text is stored once, in history_items; the
-- triggers keep the index in step with every insert, delete (including ON DELETE CASCADE from users)
-- and update of the text.
CREATE VIRTUAL TABLE `history_fts` USING fts5(
	`text`,
	content='history_items',
	content_rowid='id',
	tokenize='unicode61 remove_diacritics 2'
);
--> statement-breakpoint
CREATE TRIGGER `history_items_fts_ai` AFTER INSERT ON `history_items` BEGIN
	INSERT INTO `history_fts`(rowid, `text`) VALUES (new.`id`, new.`text`);
END;
--> statement-breakpoint
CREATE TRIGGER `history_items_fts_ad` AFTER DELETE ON `history_items` BEGIN
	INSERT INTO `history_fts`(`history_fts`, rowid, `text`) VALUES ('delete', old.`id`, old.`text`);
END;
--> statement-breakpoint
CREATE TRIGGER `history_items_fts_au` AFTER UPDATE OF `text` ON `history_items` BEGIN
	INSERT INTO `history_fts`(`history_fts`, rowid, `text`) VALUES ('delete', old.`id`, old.`text`);
	INSERT INTO `history_fts`(rowid, `text`) VALUES (new.`id`, new.`text`);
END;
--> statement-breakpoint
-- Index any rows that existed before this migration.
INSERT INTO `history_fts`(`history_fts`) VALUES ('rebuild');
