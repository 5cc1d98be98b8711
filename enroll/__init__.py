"""The Django project package and the enrollment app (requests, their flow, submission)."""
