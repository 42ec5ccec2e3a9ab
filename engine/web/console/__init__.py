"""The console (SPEC §10): pages for business users and admins, under /console/ on the receiver."""
