"""Users: sign-up, e-mail verification, profile, and client-certificate login (trusted proxy headers)."""
