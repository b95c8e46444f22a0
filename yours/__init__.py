"""Your code: every module in this package is loaded by the programs at start
(services/common/extensions.py says which hooks each program asks for). The platform never has
to be edited to add or remove a feature here; see "Make it yours" in the README."""
