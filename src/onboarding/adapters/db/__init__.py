"""Persistence: SQLAlchemy Core over aiosqlite (embedded default) or asyncpg (production)."""
