"""The operator view: a small web app over Redis (`duoscan view`)."""
