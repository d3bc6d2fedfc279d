"""The CDK app's entry point, as cdk.json runs it (`python app.py`); the builder is stacks/app.py."""

from stacks.app import main

if __name__ == "__main__":
    main()
