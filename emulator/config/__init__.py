"""Project configuration: wrangler files in, a typed ProjectConfig and diagnostics out."""

from emulator.config.model import (DevConfig, Diagnostic, ProjectConfig, WorkerLoaderConfig,
                                   WorkflowConfig)

__all__ = ["DevConfig", "Diagnostic", "ProjectConfig", "WorkerLoaderConfig", "WorkflowConfig"]
