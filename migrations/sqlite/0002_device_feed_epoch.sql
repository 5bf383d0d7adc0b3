-- The version of the plugin that shaped a device's feed when it last pulled (0: no plugin),
-- so that a plugin with on_upgrade = "reset" can tell devices that predate it.
ALTER TABLE devices ADD COLUMN feed_epoch INTEGER NOT NULL DEFAULT 0;
