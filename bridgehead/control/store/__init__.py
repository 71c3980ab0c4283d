"""What the control plane keeps durably: the contract (``base``) and its backends (``sqlite``,
``postgres``, ``memory``)."""
