"""Cloud price providers (AWS, Azure, GCP) behind scriptrun.cost.prices.PriceSource, and billing."""
