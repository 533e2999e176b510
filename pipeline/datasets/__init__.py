"""Dataset builders and adapters that write precal manifests."""

from pipeline.datasets.avdigits import DatasetError, build_avdigits, build_sample, bundled_sample_dir, plan_avdigits

__all__ = ["DatasetError", "build_avdigits", "build_sample", "bundled_sample_dir", "plan_avdigits"]
