"""The provider agent: runs on a provider's node and talks to the platform only through its REST API.

It imports nothing from the server's packages (no Django): standard library, plus nvidia-ml-py, NumPy or PyTorch
when the node has them.
"""

__version__ = "0.1.0"
