"""The pure domain: entities, value objects, rules, errors and events. No I/O, no framework."""
