"""The reference agent stack (``target.url: demo``): what the rest of agentscale needs of it.

Only the command layer imports this package; the core learns the demo's dependencies as data.
"""

from agentscale.demo.process import DemoProcess, demo_profile
from agentscale.demo.settings import DEPENDENCIES, KINDS

__all__ = ["DEPENDENCIES", "KINDS", "DemoProcess", "demo_profile"]
