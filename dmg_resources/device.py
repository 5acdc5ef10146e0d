"""The torch device training runs on: CUDA when present (or asked for), else CPU."""

from dagster import ConfigurableResource
from pydantic import Field


class TorchDevice(ConfigurableResource):
    device: str = Field(
        default="auto", description="'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:N'."
    )
    precision: str = Field(
        default="auto",
        description="'auto' (the trainer's choice for the device), 'fp32' or 'bf16' (autocast).",
    )

    def resolve(self) -> str:
        """The concrete device string; asking for CUDA where there is none is an error."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device!r} requested but CUDA is not available")
        return self.device

    def gpu_count(self) -> int:
        import torch

        return torch.cuda.device_count()
