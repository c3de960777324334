//! Nothing to link: the campaign is `tests/campaign.rs`, its seeds are `corpus/`.
