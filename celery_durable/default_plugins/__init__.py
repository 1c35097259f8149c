"""The built-in triggers, conditions and actions, registered as ordinary plugins."""
