"""Pruning and low-rank spaces: genome -> plan -> smaller model, and the analytic cost of a plan."""

from moprune.space.base import Plan, Space
from moprune.space.channels import ChannelSpace
from moprune.space.combined import LowRankChannelSpace
from moprune.space.lowrank import LowRankSpace
from moprune.space.weights import WeightSpace

__all__ = ["ChannelSpace", "LowRankChannelSpace", "LowRankSpace", "Plan", "Space", "WeightSpace"]
