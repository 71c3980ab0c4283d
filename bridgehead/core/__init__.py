"""What the agent, the control plane and the sandbox share: the error tree (``errors``),
logging (``logs``), redaction (``redact``), running a command (``commands``), reading TOML
configuration (``tomlconfig``), private data-dir files (``files``), listen addresses
(``addresses``), the event loop (``eventloop``) and serving HTTP with uvicorn (``serve``)."""
