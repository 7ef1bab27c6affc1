"""The HTML report: `collect` gathers the analyses' tables, `figures` draws them with plotly,
`html` renders one self-contained file from reports/templates/."""
