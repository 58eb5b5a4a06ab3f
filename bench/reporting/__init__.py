"""Human-facing reports: hand-made SVG plots (svg), the HTML frame (page) and report.html (html_report)."""
