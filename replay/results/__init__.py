"""The result document and what is derived from it: flat names, cells (mean and confidence
interval), and the results corpus (Arrow).
"""
