"""Automation rules: triggers, conditions and actions that react to events."""
