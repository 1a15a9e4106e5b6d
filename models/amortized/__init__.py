"""Amortized posteriors: networks that map a prior and data to a posterior."""
