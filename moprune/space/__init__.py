"""Pruning spaces: genome -> plan -> smaller model, and the analytic cost of a plan."""

from moprune.space.base import Plan, Space
from moprune.space.channels import ChannelSpace
from moprune.space.weights import WeightSpace

__all__ = ["ChannelSpace", "Plan", "Space", "WeightSpace"]
