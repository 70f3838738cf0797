"""Backends a bundle can be written for; each turns the shared export units into its artifact."""
