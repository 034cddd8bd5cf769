"""Adapters: the database, the SMS gateway, crypto: the outside world behind small interfaces."""
