"""moto's internals patched for the local stack, one module per AWS service patched.

`relayflow.local.moto_shim` installs them all (`install()` / `uninstall()`) and re-exports what the
rest of the local stack uses; see its docstring for what each patch does and why.
"""
