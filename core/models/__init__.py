"""Networks for the shipped flow models, built by name through `build_network(arch, **args)`."""
from .mlp import TimeMLP
from .registry import ARCHITECTURES, build_network, check_arch_args
from .resmlp import CondResMLP
