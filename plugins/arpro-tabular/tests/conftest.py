"""The tabular plugin's tests: one thread, as the core's tests, so figures do not depend on the machine's cores."""

import torch

torch.set_num_threads(1)
