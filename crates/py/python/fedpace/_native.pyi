"""Type stubs of fedpace's native module (Rust, pyo3). Use it through ``fedpace`` and
``fedpace.data``; these names are re-exported there."""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

def version() -> str:
    """The version of fedpace this module was built from."""

class Federation:
    """A data set of your own, built by ``fedpace.data.from_arrays`` or
    ``fedpace.data.from_clients``; pass it to ``fedpace.run(..., data=...)`` and name it
    in the config: ``[data] source = "<name>"``."""

    @property
    def name(self) -> str:
        """The name a config uses for it (``[data] source``)."""
    @property
    def num_clients(self) -> int:
        """Number of clients."""
    @property
    def num_classes(self) -> int:
        """Number of label classes."""
    @property
    def sample_shape(self) -> List[int]:
        """Shape of one sample."""
    @property
    def has_server_test(self) -> bool:
        """Whether the server holds a test set of its own."""
    @property
    def description(self) -> str:
        """One line: name, clients, partition."""
    def client_sizes(self) -> List[Tuple[int, int]]:
        """Each client's (training, test) sample counts."""
    def client_labels(self, k: int) -> List[int]:
        """The training labels of client ``k``."""

class Client:
    """A sampled client as the rate policy sees it (what the client shares)."""

    @property
    def id(self) -> int:
        """Client id (0-based)."""
    @property
    def num_train(self) -> int:
        """Training samples."""
    @property
    def num_test(self) -> int:
        """Test samples."""
    @property
    def device(self) -> Optional[str]:
        """Device class (``device_classes`` in the config), if any."""
    @property
    def label_histogram(self) -> Optional[List[int]]:
        """Training label counts, when the client shares them (``client.share``)."""

class Report:
    """What a client reported after local training (``observe``'s ``report``)."""

    @property
    def steps(self) -> int:
        """Local steps run."""
    @property
    def loss_before(self) -> float:
        """Loss of the first mini-batch at the global model."""
    @property
    def loss_after(self) -> float:
        """Mean mini-batch loss over the last epoch's worth of steps."""
    @property
    def train_loss(self) -> float:
        """Mean mini-batch loss over all local steps."""
    @property
    def update_norm(self) -> float:
        """Norm of the client's update ‖Δ_k‖."""
    @property
    def grad_norm(self) -> float:
        """Norm of the first mini-batch gradient at the global model."""
    @property
    def rate_sum(self) -> List[float]:
        """Sum of the rates used, per parameter group."""

class Plan:
    """A client's plan for one round (``plan``'s ``base``: a fresh copy each call).
    Change ``lr``, ``multipliers``, ``prox_mu`` or ``max_steps`` and return it."""

    lr: float
    """Learning rate."""
    prox_mu: float
    """FedProx's proximal coefficient (0: none)."""
    max_steps: Optional[int]
    """Upper bound on local steps (None: no bound)."""
    multipliers: Dict[str, float]
    """Rate multiplier per parameter group; assign a dict to change some."""
    @property
    def batch_size(self) -> int:
        """Mini-batch size."""
    @property
    def epochs(self) -> Optional[int]:
        """Local epochs (None when the plan counts steps)."""
    @property
    def steps(self) -> Optional[int]:
        """Local steps (None when the plan counts epochs)."""

class Weights:
    """The final model's values, flat; ``numpy.asarray`` gives a read-only float32 view
    (no copy)."""

    @property
    def __array_interface__(self) -> Dict[str, Any]: ...
    def __len__(self) -> int: ...

def from_pooled(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    pool: str,
    seed: int,
    test: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> Federation: ...
def from_clients(
    name: str,
    clients: Sequence[Tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    test_fraction: float,
    seed: int,
    test: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> Federation: ...
def run(
    kind: str,
    config: Any,
    overrides: Sequence[Tuple[str, Any]],
    data: Sequence[Tuple[str, Federation]],
    policies: Sequence[Tuple[str, Any]],
    out: Optional[str] = None,
    force: bool = False,
    progress: Optional[Callable[[str, int, int, str], Any]] = None,
) -> Dict[str, Any]: ...
def policy_overhead(policy: Any, calls: int) -> Tuple[float, float, float, int]:
    """Times ``calls`` plans of by-data-size through ``policy(mean_n)`` (a Python class)
    and through the built-in Rust policy; returns (Python seconds, Rust seconds, n̄,
    calls whose rates differ). Used by scripts/python-policy-overhead.py."""
