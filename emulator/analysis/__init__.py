"""Static analysis of a project, without running it: ``dynwf check`` (config and code
diagnostics), the tenant-code lint, and the outline of a workflow's steps."""
