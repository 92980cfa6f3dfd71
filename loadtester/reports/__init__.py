"""What people read of a stored run, for the command line and the web app alike: the report's
data built once (data), the report files (htmlreport, pdfreport, with their charts and content),
the multi-run plot page (plot) and how URLs and hosts are shown (display)."""
