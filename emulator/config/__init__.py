"""Project configuration: wrangler files in, a typed ProjectConfig and diagnostics out."""

from emulator.config.jsonc import parse_jsonc
from emulator.config.loader import find_config, load_config
from emulator.config.model import (DevConfig, Diagnostic, ProjectConfig, WorkerLoaderConfig,
                                   WorkflowConfig)

__all__ = ["DevConfig", "Diagnostic", "ProjectConfig", "WorkerLoaderConfig", "WorkflowConfig",
           "find_config", "load_config", "parse_jsonc"]
