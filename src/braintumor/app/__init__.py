"""The Streamlit web page (``braintumor app``): page.py renders, views.py holds the testable logic."""
