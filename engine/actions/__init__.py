"""Doing what matched rules say: Hana updates and notifications, each its own retried job."""
