"""What runs an artifact's programs: `exported` (rebuilt from the description, any device) and `aoti` (AOTInductor,
compiled and cached per device); runtime.load_policy says which one a load may use."""
