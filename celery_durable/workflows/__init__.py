"""Durable workflows: definitions, steps, executions and run handles."""
