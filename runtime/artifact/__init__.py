"""The artifact contract: one `.pt2` written by `export/`, read and verified here before anything of it runs.

manifest (its fields and rules), checksum, archive (bounded reads of the PT2 zip) and pt2 (torch's archive API),
describe (the programs written down), graphs (that description checked and rebuilt), sizes (its meta-device sizing),
allowed_ops (the ops it may call),
verify (the one validation every entry point runs, then the programs loaded onto a device).
"""
