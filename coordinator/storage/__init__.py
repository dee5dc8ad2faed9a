"""Persistence: SQLModel tables and the data-access functions over them."""
