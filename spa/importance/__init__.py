"""Importance: criteria that score every prunable group, one score per root channel (higher =
keep). registry.py owns their names; each other module here registers its criteria."""
