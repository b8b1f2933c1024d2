import os

# The suite runs on the CPU (CI has no accelerator); keep XLA from grabbing every core's worth of threads
# for a single small op and keep results deterministic.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
