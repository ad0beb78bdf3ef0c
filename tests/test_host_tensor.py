import pytest
import torch

from gfldet.host_tensor import host_tensor


def test_host_tensor_is_torch_tensor_of_the_values():
    t = host_tensor([[1, 2], [3, 4]], device="cpu", dtype=torch.float64)
    assert t.dtype == torch.float64 and t.device.type == "cpu" and t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert host_tensor([5, 6], device=torch.device("cpu")).dtype == torch.int64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_host_tensor_reaches_the_gpu_without_a_synchronisation():
    torch.cuda.set_sync_debug_mode("error")
    try:
        t = host_tensor([1.5, 2.5], device="cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert t.device.type == "cuda" and t.cpu().tolist() == [1.5, 2.5]
