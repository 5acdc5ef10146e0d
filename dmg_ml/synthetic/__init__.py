"""The embedded synthetic TCGA hub: its layout (genes, probes, drivers) and the writer."""
