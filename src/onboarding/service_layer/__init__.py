"""The service layer: commands, their handlers, the unit of work and the message bus."""
