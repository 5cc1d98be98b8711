"""Users: profile and e-mail verification (sign-up pages and certificate login come later)."""
