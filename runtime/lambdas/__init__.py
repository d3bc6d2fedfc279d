"""The code of the stack's Lambda functions: one folder per function, holding that function's files alone (the stack
ships the folder as it is, stacks/wake_on_upload.py for wake_on_upload/); no __init__.py inside, so the asset is
the code."""
