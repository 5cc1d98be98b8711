"""The certificate authority app: CAs, issued certificates, revocations, CRLs and their public URLs."""
