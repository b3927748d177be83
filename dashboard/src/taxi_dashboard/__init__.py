"""ML-taxi live dashboard (Streamlit)."""
