"""Data path and embeddings: listing, corruptness/duplicate check, fast decode, embedding models, SimCLR."""

from ._common import run_threads
from .checkpoints import load_simclr_checkpoint, save_simclr_checkpoint
from .csvio import EmbeddingsError, load_custom_embeddings, load_embeddings_with_labels, save_embeddings
from .decode import load_image, open_rgb
from .embedder import EmbedConfig, embed_samples
from .files import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    CheckResult,
    FrameRef,
    ImageRef,
    VideoTiming,
    av_available,
    check_samples,
    frame_name,
    list_samples,
    resolve_sample,
    split_duplicates,
    video_pts,
    video_timing,
)
from .models import EfficientNetLite0Embedder, SimCLRBackbone, embedding_model_from_config
from .simclr import TrainConfig, nt_xent, train_simclr

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "CheckResult",
    "EfficientNetLite0Embedder",
    "EmbedConfig",
    "EmbeddingsError",
    "FrameRef",
    "ImageRef",
    "SimCLRBackbone",
    "TrainConfig",
    "VideoTiming",
    "av_available",
    "check_samples",
    "embed_samples",
    "embedding_model_from_config",
    "frame_name",
    "list_samples",
    "load_custom_embeddings",
    "load_embeddings_with_labels",
    "load_image",
    "load_simclr_checkpoint",
    "nt_xent",
    "open_rgb",
    "resolve_sample",
    "run_threads",
    "save_embeddings",
    "save_simclr_checkpoint",
    "split_duplicates",
    "train_simclr",
    "video_pts",
    "video_timing",
]
