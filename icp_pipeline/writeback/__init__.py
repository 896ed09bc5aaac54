"""Write-back: the ICP's fit score, tier, reasons and latest trigger as fields on the CRM's accounts."""
