"""Django's SQLite backend with write transactions queued on a lock file (:mod:`enroll.sqlite.base`)."""
