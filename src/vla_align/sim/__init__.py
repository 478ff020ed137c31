"""Simulators: demonstration generators and closed-loop evaluation environments."""
